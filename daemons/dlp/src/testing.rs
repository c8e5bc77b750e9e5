//! Generators for tests (feature `testing`): values with valid checksums built at run time, so
//! no token-, card- or key-shaped literal ever sits in the repository (it would trip GitHub's
//! push protection and our own git-gate).

/// A tiny deterministic generator: a corpus must be the same on every run.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// The next 31 bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// `n` characters drawn from `alphabet`.
    pub fn pick(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n)
            .map(|_| char::from(a[self.next_u32() as usize % a.len()]))
            .collect()
    }
}

/// A card number starting with `prefix`, `len` digits long, whose last digit makes Luhn's sum
/// right.
pub fn luhn_card(prefix: &str, len: usize, rng: &mut Lcg) -> String {
    let mut digits: Vec<u32> = prefix.bytes().map(|b| u32::from(b - b'0')).collect();
    while digits.len() < len - 1 {
        digits.push(rng.next_u32() % 10);
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &v)| match (i % 2 == 0, v * 2) {
            (true, w) if w > 9 => w - 9,
            (true, w) => w,
            (false, _) => v,
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(|&d| char::from(b'0' + d as u8)).collect()
}

/// An IBAN for `country` with the mod-97 check digits that make `bban` valid.
pub fn iban_for(country: &str, bban: &str) -> String {
    let numeric = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_digit() {
                    char::from(b).to_string()
                } else {
                    (u32::from(b - b'A') + 10).to_string()
                }
            })
            .collect()
    };
    let rem = format!("{}{}00", numeric(bban), numeric(country))
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    format!("{country}{:02}{bban}", 98 - rem)
}

/// A base58check string of `version` and `payload` (a WIF key with 0x80, an address with 0).
pub fn base58check(version: u8, payload: &[u8]) -> String {
    let mut data = vec![version];
    data.extend_from_slice(payload);
    bs58::encode(data).with_check().into_string()
}
