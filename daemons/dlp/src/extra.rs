//! Detectors a manifest adds (`egress.dlp.extra`): a regular expression and, optionally, a
//! check the match must pass. They run on every decoded layer, after the built-in ones.

use crate::Finding;
use crate::detect::{card, iban, looks_random};
use regex::bytes::{Regex, RegexBuilder};

/// The check an extra detector's match must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Luhn's checksum over the match's digits (and a card issuer prefix).
    Luhn,
    /// An IBAN's mod-97.
    Mod97,
    /// Random-looking: letters and digits, high entropy.
    Entropy,
}

/// One compiled extra detector.
#[derive(Debug, Clone)]
pub struct ExtraRule {
    id: String,
    regex: Regex,
    check: Option<Check>,
}

/// The largest compiled program an extra regex may make: a pattern is the manifest author's,
/// and a huge one would slow every request.
const SIZE_LIMIT: usize = 10 << 20;

impl ExtraRule {
    /// Compile `pattern`; the error says what is wrong with it.
    pub fn new(id: &str, pattern: &str, check: Option<Check>) -> Result<ExtraRule, String> {
        // ASCII classes: `\d`, `\w` and `\b` mean what a token's alphabet means.
        let regex = RegexBuilder::new(pattern)
            .unicode(false)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        if regex.is_match(b"") {
            return Err("it matches the empty string, so it would match everything".into());
        }
        Ok(ExtraRule {
            id: id.to_string(),
            regex,
            check,
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The first match in `hay` that passes the check.
    pub(crate) fn find(&self, hay: &[u8]) -> Option<Finding> {
        self.regex
            .find_iter(hay)
            .find(|m| {
                let s = m.as_bytes();
                match self.check {
                    None => true,
                    Some(Check::Luhn) => {
                        let digits: Vec<u8> =
                            s.iter().copied().filter(u8::is_ascii_digit).collect();
                        card(&digits)
                    }
                    Some(Check::Mod97) => {
                        let chars: Vec<u8> = s
                            .iter()
                            .copied()
                            .filter(|b| !b.is_ascii_whitespace())
                            .map(|b| b.to_ascii_uppercase())
                            .collect();
                        iban(&chars)
                    }
                    Some(Check::Entropy) => looks_random(s, 16, 3.3),
                }
            })
            .map(|m| Finding {
                rule: self.id.clone(),
                start: m.start(),
                end: m.end(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scanner;

    #[test]
    fn an_extra_rule_is_found_in_every_layer_and_bad_ones_are_errors() {
        use base64::Engine;
        let rule = ExtraRule::new("acme-key", r"ACME-[0-9]{6}-[A-Z]{4}", None).unwrap();
        let scanner = Scanner::new(&[]).with_extra(vec![rule]);
        let hay = base64::engine::general_purpose::STANDARD.encode("key: ACME-123456-WXYZ");
        assert_eq!(
            scanner
                .inspect(format!("d={hay}").as_bytes())
                .map(|f| f.rule),
            Some("acme-key (in base64)".into())
        );
        assert!(ExtraRule::new("x", "(", None).is_err());
        assert!(
            ExtraRule::new("x", "a*", None)
                .unwrap_err()
                .contains("empty string")
        );
        let luhn = ExtraRule::new("card16", r"\b[0-9]{16}\b", Some(Check::Luhn)).unwrap();
        assert!(luhn.find(b"n 1234567812345678 n").is_none());
        // A manifest's regex may match fewer digits than a card has: no check may panic.
        let short = ExtraRule::new("short", r"[0-9]{2}", Some(Check::Luhn)).unwrap();
        assert!(short.find(b"12").is_none());
        let iban = ExtraRule::new("short-iban", r"[A-Z]{2}", Some(Check::Mod97)).unwrap();
        assert!(iban.find(b"DE").is_none());
    }
}
