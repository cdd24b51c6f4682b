//! Draws for what AWS does now and then (a duplicate receive, a lagging
//! index): a small generator seeded by the caller, so a simulation that
//! seeds it replays exactly. Not for anything secret.

/// SplitMix64: one `u64` of state, good spread, no dependency.
#[derive(Debug, Clone)]
pub struct Chance(u64);

impl Chance {
    pub fn new(seed: u64) -> Self {
        Chance(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p` (never for `p <= 0`).
    pub fn one_in(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_and_rates_hold_roughly() {
        let (mut a, mut b) = (Chance::new(7), Chance::new(7));
        let draws: Vec<f64> = (0..5).map(|_| a.unit()).collect();
        assert_eq!(draws, (0..5).map(|_| b.unit()).collect::<Vec<_>>());
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let hits = (0..100_000).filter(|_| a.one_in(0.01)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert!(!a.one_in(0.0));
    }
}
