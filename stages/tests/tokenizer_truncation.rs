//! Long texts are tokenized by prefixes, not whole; the ids must be exactly what the `tokenizers`
//! crate gives for the whole text truncated to `max_len` (its own truncation is the reference).

use std::path::PathBuf;

use splade_stages::model::tokenize::TextTokenizer;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conf/models/splade-tiny")
}

/// The whole text through the `tokenizers` crate, truncated to `max_len`.
fn reference(text: &str, max_len: usize) -> Vec<u32> {
    let mut t = Tokenizer::from_file(model_dir().join("tokenizer.json")).unwrap();
    t.with_padding(None);
    t.with_truncation(Some(TruncationParams {
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .unwrap();
    t.encode(text, true).unwrap().get_ids().to_vec()
}

/// A long text mixing what splits words: punctuation without spaces, accents, CJK, emoji,
/// digits, words longer than WordPiece's 100-character limit, runs of whitespace.
fn long_text(words: usize) -> String {
    let pieces = [
        "retrieval",
        "SPLADE's",
        "naïve",
        "café",
        "co-occurrence",
        "l'été",
        "東京大学",
        "😀ok",
        "2024-11-30",
        "x",
        "unbelievably",
        "(sparse)",
        "vectors,and",
        "Ünïcödé",
        "supercalifragilisticexpialidocious",
        "a.b.c.d",
        "\t\n",
        "ｆｕｌｌｗｉｄｔｈ",
    ];
    let mut out = String::new();
    let mut seed = 12345u64;
    for i in 0..words {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = pieces[(seed >> 33) as usize % pieces.len()];
        out.push_str(w);
        if i % 97 == 0 {
            out.push_str(&"z".repeat(150));
        }
        out.push(if (seed >> 20).is_multiple_of(7) {
            ','
        } else {
            ' '
        });
    }
    out
}

#[test]
fn prefix_tokenization_equals_truncating_the_whole_text() {
    let texts = [
        long_text(20_000),
        "word ".repeat(10_000),
        "nospacesatall".repeat(5_000),
        "短".repeat(30_000),
        String::new(),
        "short text".into(),
    ];
    for max_len in [2usize, 3, 8, 32, 256, 512] {
        let tok = TextTokenizer::load(&model_dir(), max_len).unwrap();
        for text in &texts {
            let refs = [text.as_str()];
            let ours = tok.encode_batch(&refs).unwrap();
            assert_eq!(
                ours[0],
                reference(text, max_len),
                "max_len {max_len}, text of {} bytes",
                text.len()
            );
        }
    }
}
