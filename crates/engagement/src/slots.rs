//! The types `/historical` answers, each at a fixed slot, and sets of them as bit masks:
//! how the store's rows, the shared tier and the simulator number types.

use crate::{Endpoint, EngagementType};

/// How many types `/historical` answers.
pub const SLOTS: usize = 17;

/// The counts of every type in one hour, in [`slot`] order (those not fetched are 0).
pub type Hour = [u64; SLOTS];

/// The types a fact can hold, in slot order.
pub fn slot_types() -> [EngagementType; SLOTS] {
    let mut out = [EngagementType::Impressions; SLOTS];
    for (slot, ty) in out.iter_mut().zip(Endpoint::Historical.types()) {
        *slot = ty;
    }
    out
}

/// The slot of `ty`, if `/historical` answers for it.
pub fn slot(ty: EngagementType) -> Option<usize> {
    Endpoint::Historical.types().position(|t| t == ty)
}

/// The mask of a set of slots.
pub fn slot_mask(slots: &[usize]) -> u32 {
    slots.iter().fold(0, |m, s| m | 1 << s)
}

/// The slots of `types` (those `/historical` answers), sorted, each once.
pub fn slots_of(types: &[EngagementType]) -> Vec<usize> {
    let mut slots: Vec<usize> = types.iter().filter_map(|t| slot(*t)).collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// The mask of the slots of `types`.
pub fn types_mask(types: &[EngagementType]) -> u32 {
    slot_mask(&slots_of(types))
}

/// The slots a mask holds, in order.
pub fn slots_in(mask: u32) -> impl Iterator<Item = usize> {
    (0..SLOTS).filter(move |s| mask & (1 << s) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_historical_types() {
        let types = slot_types();
        assert!(!types.contains(&EngagementType::QuoteTweets));
        for (i, ty) in types.iter().enumerate() {
            assert_eq!(slot(*ty), Some(i));
        }
        assert_eq!(slot(EngagementType::QuoteTweets), None);
    }

    #[test]
    fn a_mask_holds_the_slots_of_its_types_and_nothing_else() {
        let types = [EngagementType::Retweets, EngagementType::Impressions, EngagementType::Retweets];
        let mask = types_mask(&types);
        let held: Vec<usize> = slots_in(mask).collect();
        let expected = slots_of(&[EngagementType::Impressions, EngagementType::Retweets]);
        assert_eq!(held, expected);
        assert_eq!(held.len(), 2);
        assert_eq!(slot_types()[held[0]], EngagementType::Impressions);
        assert_eq!(slot_types()[held[1]], EngagementType::Retweets);
    }
}
