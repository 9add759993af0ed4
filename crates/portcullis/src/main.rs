//! The `portcullis` binary. Everything happens in [`portcullis::run`].

fn main() -> std::process::ExitCode {
    portcullis::run()
}
