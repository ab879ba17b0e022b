//! What the wire quantizations cost, measured on real all-MiniLM-L6-v2 vectors
//! (../shared/reference) and on pattern-like means of three of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use omega_protocol::Embedding;
use support::*;

struct Stats {
    min: f32,
    mean: f32,
    p5: f32,
}

fn stats(mut v: Vec<f32>) -> Stats {
    v.sort_by(f32::total_cmp);
    Stats {
        min: v[0],
        mean: v.iter().sum::<f32>() / v.len() as f32,
        p5: v[v.len() / 20],
    }
}

fn cosines(es: &[Embedding], codec: fn(&Embedding) -> Embedding) -> Stats {
    stats(es.iter().map(|e| e.cosine(&codec(e))).collect())
}

fn ternary(e: &Embedding) -> Embedding {
    e.to_ternary().decode().unwrap()
}

fn int8(e: &Embedding) -> Embedding {
    e.to_i8().decode().unwrap()
}

#[test]
fn ternary_and_int8_cosine_on_real_vectors() {
    let singles: Vec<Embedding> = reference_embeddings().into_iter().map(|(_, e)| e).collect();
    let patterns = pattern_embeddings();
    for (name, set) in [
        ("reference texts", &singles),
        ("3-item patterns", &patterns),
    ] {
        let t = cosines(set, ternary);
        let i = cosines(set, int8);
        println!(
            "{name} (n={}): ternary 77 B cos mean {:.4} p5 {:.4} min {:.4}; int8 388 B cos mean {:.5} min {:.5}",
            set.len(), t.mean, t.p5, t.min, i.mean, i.min
        );
        assert!(
            t.mean >= 0.89 && t.min >= 0.87,
            "ternary mean {} min {}",
            t.mean,
            t.min
        );
        assert!(i.min >= 0.9999, "int8 min {}", i.min);
    }
}

#[test]
fn ternary_patterns_still_retrieve_their_items() {
    // What matters downstream is retrieval: a pattern built from three titles
    // should rank those three titles above the other 18. Compare recall@3 of
    // the exact pattern with that of its ternary round trip.
    let refs: Vec<Embedding> = reference_embeddings().into_iter().map(|(_, e)| e).collect();
    let n = refs.len();
    let mut exact_hits = 0usize;
    let mut ternary_hits = 0usize;
    let mut total = 0usize;
    for i in 0..n {
        for j in i + 1..n {
            for k in j + 1..n {
                let p =
                    Embedding::weighted_mean([(&refs[i], 1.0), (&refs[j], 1.0), (&refs[k], 1.0)])
                        .unwrap();
                let top3 = |q: &Embedding| {
                    let mut idx: Vec<usize> = (0..n).collect();
                    idx.sort_by(|&a, &b| q.cosine(&refs[b]).total_cmp(&q.cosine(&refs[a])));
                    idx.truncate(3);
                    idx.iter().filter(|x| [i, j, k].contains(x)).count()
                };
                exact_hits += top3(&p);
                ternary_hits += top3(&ternary(&p));
                total += 3;
            }
        }
    }
    let exact = exact_hits as f64 / total as f64;
    let quant = ternary_hits as f64 / total as f64;
    println!(
        "recall@3 of a 3-item pattern's own items: exact {:.3}, ternary {:.3}",
        exact, quant
    );
    assert!(quant >= exact - 0.05, "exact {exact} ternary {quant}");
}

/// The node keeps patterns packed: an all-zero ternary code (no direction)
/// must be refused by the packed decoder as the f32 decoder refuses it, or it
/// would be stored and fail every later federation run.
#[test]
fn the_all_zero_ternary_code_is_refused_by_both_decoders() {
    let req = support::request_with_patterns(1);
    let packed = omega_protocol::TernaryEmbedding::encode(
        &req.delta
            .added
            .iter()
            .chain(&req.delta.updated)
            .next()
            .expect("one pattern")
            .embedding,
    );
    let mut body = omega_protocol::codec::encode_request(&req).unwrap();
    let needle = packed.as_bytes();
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the pattern's ternary bytes are in the body");
    let mut zero = [121u8; omega_protocol::embedding::TERNARY_BYTES];
    zero[omega_protocol::embedding::TERNARY_BYTES - 1] = 40;
    body[at..at + needle.len()].copy_from_slice(&zero);
    let payload = &body[omega_protocol::codec::FRAME_HEADER..];
    assert!(omega_protocol::codec::decode_request(payload).is_err());
    assert!(omega_protocol::codec::decode_packed_request(payload).is_err());
}
