//! The hostile corpus (tests/support/corpus.rs) through probe and decode in process: every
//! file ends as the corpus says, with the imaging error named there, and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use imaging::Limits;
use support::corpus::{Expect, corpus};

#[test]
fn every_corpus_file_is_accepted_or_refused_by_name() {
    let limits = Limits::default();
    let cases = corpus();
    assert!(
        cases
            .iter()
            .filter(|c| matches!(c.expect, Expect::Rejected { .. }))
            .count()
            >= 30
    );
    let mut wrong = Vec::new();
    for case in &cases {
        let got = std::panic::catch_unwind(|| {
            imaging::decode(&case.bytes, &limits, None).map(|img| (img.width(), img.height()))
        });
        let outcome = match &got {
            Err(_) => "PANIC".to_string(),
            Ok(Ok((w, h))) => format!("Accepted {w}x{h}"),
            Ok(Err(e)) => format!("{}: {e}", e.kind()),
        };
        let ok = match (&got, case.expect) {
            (Ok(Ok(_)), Expect::Accepted) => true,
            (Ok(Err(e)), Expect::Rejected { imaging, .. }) => e.kind() == imaging,
            _ => false,
        };
        eprintln!(
            "{} {:<32} {:>9} bytes  {outcome}",
            if ok { "ok  " } else { "FAIL" },
            case.name,
            case.bytes.len()
        );
        if !ok {
            wrong.push(format!(
                "{}: expected {:?}, got {outcome}",
                case.name, case.expect
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
