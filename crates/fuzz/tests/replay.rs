//! The short fuzzing pass of the ordinary test suite: every committed corpus input of every target
//! (`fuzz/corpus/<target>/`, seeds and what libFuzzer kept), then seeded mutations of them — bit flips,
//! insertions, deletions, splices and hostile tokens. Deterministic, so a failure reproduces; the long,
//! coverage-guided runs are `cargo fuzz run <target>` (see `docs/security.md`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

/// Mutated inputs tried per target.
const MUTATIONS: usize = 3_000;

/// Bytes that mean something to one of the parsers.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b".",
    b"=",
    b"%",
    b"%2",
    b"%00",
    b"+",
    b"\\u0000",
    b"\\",
    b"NaN",
    b"\xEF\xBB\xBF",
    b"\xFF",
    b"\x00",
    b"\n",
    b"\r\n",
    b" ",
    b"null",
    b"1e999",
    b"-0",
    b"\"jsonrpc\":\"2.0\"",
    b"\"method\":\"tools/call\"",
    b"\"name\":",
    b"\"alg\":\"none\"",
    b"\"alg\":\"HS256\"",
    b"\"kid\":",
    b"Basic ",
    b"Bearer ",
    b"http://",
    b"https://",
    b"localhost",
    b"127.0.0.1",
    b"[::1]",
    b"#",
    b"?",
    b"@",
    b"javascript:",
    b"=?base64?",
    b"[[server]]",
    b"${",
    b"\"\"\"",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 => out.insert(at, rng.next() as u8),
            3 if at < out.len() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let chunk = out[at..end].to_vec();
                out.splice(at..at, chunk);
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // A file a running fuzzer replaced since the listing is skipped.
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

#[test]
fn every_target_survives_its_corpus_and_seeded_mutations() {
    for (name, target) in portcullis_fuzz::TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for input in &inputs {
            target(input);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        for i in 0..MUTATIONS {
            let input = mutate(&mut rng, &inputs[i % inputs.len()], &inputs);
            let outcome = std::panic::catch_unwind(|| target(&input));
            assert!(outcome.is_ok(), "{name} failed on {:?}", String::from_utf8_lossy(&input));
        }
    }
}
