//! One Tweet's day as kept on disk: for each type, which hours are held and their counts.
//!
//! Written compact: 4 bytes holding the mask of the slots present (the top byte 0xff marks
//! this form), then per slot present, in [`slot`] order, the mask of held hours (3 bytes),
//! the length of the counts that follow (LEB128), and one LEB128 count per held hour. Rows
//! of stores from before (format 1) are written wide: every slot, absent or not, as a 4-byte
//! mask and a 4-byte length before its counts; they are read as they are, and rewritten
//! compact when a call adds to them. A reader that wants two types of seventeen skips the
//! other blocks without decoding them.

pub use engagement::slots::{Hour, SLOTS, slot, slot_mask, slot_types, slots_in, slots_of, types_mask};

/// A day of one Tweet: per type, the hours held and their counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRow {
    /// `held[slot]` bit `h`: hour `h` (UTC) of that type is held.
    pub held: [u32; SLOTS],
    pub counts: Box<[[u64; 24]; SLOTS]>,
}

impl Default for DayRow {
    fn default() -> Self {
        DayRow { held: [0; SLOTS], counts: Box::new([[0; 24]; SLOTS]) }
    }
}

/// Why stored bytes could not be read as a row.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stored day of facts is malformed: {0}")]
pub struct Malformed(pub(crate) &'static str);

impl DayRow {
    /// Sets hour `h` (0..24) of the slots in `slots` (a mask) to `hour`'s counts.
    pub fn set(&mut self, h: usize, slots: u32, hour: &Hour) {
        for (slot, &c) in hour.iter().enumerate() {
            if slots & (1 << slot) != 0 {
                self.held[slot] |= 1 << h;
                self.counts[slot][h] = c;
            }
        }
    }

    /// Takes every hour `newer` holds (newer facts win).
    pub fn overlay(&mut self, newer: &DayRow) {
        for slot in 0..SLOTS {
            for h in held_hours(newer.held[slot]) {
                self.counts[slot][h] = newer.counts[slot][h];
            }
            self.held[slot] |= newer.held[slot];
        }
    }

    /// The row as stored.
    pub fn encode(&self) -> Vec<u8> {
        let present =
            self.held.iter().enumerate().fold(0u32, |m, (s, held)| if *held != 0 { m | 1 << s } else { m });
        let counts_bytes = 3 * self.held.iter().map(|m| m.count_ones() as usize).sum::<usize>();
        let mut out = Vec::with_capacity(4 + 4 * present.count_ones() as usize + counts_bytes);
        out.extend_from_slice(&(present | COMPACT).to_le_bytes());
        for (slot, counts) in self.counts.iter().enumerate() {
            if present & (1 << slot) != 0 {
                put_slot(&mut out, self.held[slot], held_hours(self.held[slot]).map(|h| counts[h]));
            }
        }
        out
    }

    /// The whole row from its stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<DayRow, Malformed> {
        let mut row = DayRow::default();
        let all: Vec<usize> = (0..SLOTS).collect();
        row.held = decode_slots(bytes, &all, true, |i, h, c| row.counts[i][h] = c)?;
        Ok(row)
    }
}

/// The row of one day holding, of the slots in `slots` (a mask), the counts of `hours`
/// (hour of the day 0..24, ascending, each once; its counts of `slots`' types in slot
/// order) and nothing else, encoded: what [`DayRow::encode`] gives of such a row, without
/// building it.
#[cfg(test)]
pub(crate) fn encode_hours(slots: u32, hours: &[(usize, &[u64])]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_hours_into(&mut out, slots, hours);
    out
}

/// [`encode_hours`], appended to `out`.
pub fn encode_hours_into(out: &mut Vec<u8>, slots: u32, hours: &[(usize, &[u64])]) {
    let held = hours.iter().fold(0u32, |m, (h, _)| m | 1 << h);
    let present = if held == 0 { 0 } else { slots & ((1 << SLOTS) - 1) };
    out.reserve(4 + present.count_ones() as usize * (4 + 3 * hours.len()));
    out.extend_from_slice(&(present | COMPACT).to_le_bytes());
    for (k, _) in slots_in(present).enumerate() {
        put_slot(out, held, hours.iter().map(|(_, counts)| counts[k]));
    }
}

/// The top byte of a compact row's first word; a wide row's is always 0.
const COMPACT: u32 = 0xff00_0000;

/// Appends one slot of a compact row: the mask of its `held` hours, the length of their
/// counts, and the counts. The counts are written first, after one byte kept for the
/// length, which moves them along in the rare case the length takes more.
fn put_slot(out: &mut Vec<u8>, held: u32, counts: impl Iterator<Item = u64>) {
    out.extend_from_slice(&held.to_le_bytes()[..3]);
    let at = out.len();
    out.push(0);
    for count in counts {
        put_varint(out, count);
    }
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(3);
        put_varint(&mut prefix, len as u64);
        out.splice(at..at + 1, prefix);
    }
}

/// The hours set in a mask, ascending.
pub fn held_hours(mask: u32) -> impl Iterator<Item = usize> + Clone {
    (0..24).filter(move |h| mask & (1 << h) != 0)
}

fn word(bytes: &[u8], at: usize, what: &'static str) -> Result<u32, Malformed> {
    let b: [u8; 4] = bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or(Malformed(what))?;
    Ok(u32::from_le_bytes(b))
}

/// Reads the `wanted` slots (ascending) of stored bytes: their held-hour masks (the `i`-th
/// wanted slot's at `i`; the rest 0), and with `counts` each held count as
/// `each(i, hour, count)` for the `i`-th wanted slot.
pub fn decode_slots(
    bytes: &[u8],
    wanted: &[usize],
    counts: bool,
    mut each: impl FnMut(usize, usize, u64),
) -> Result<[u32; SLOTS], Malformed> {
    let mut masks = [0; SLOTS];
    let first = word(bytes, 0, "short mask")?;
    let compact = first & COMPACT == COMPACT;
    let present = if compact { first & !COMPACT } else { (1 << SLOTS) - 1 };
    let mut at = if compact { 4 } else { 0 };
    let mut next = wanted.iter().copied().enumerate().peekable();
    for slot in 0..SLOTS {
        let Some(&(i, want)) = next.peek() else { break };
        if present & (1 << slot) == 0 {
            // Not held at all: its mask stays empty.
            if want == slot {
                next.next();
            }
            continue;
        }
        let (mask, len) = if compact {
            let b = bytes.get(at..at + 3).ok_or(Malformed("short mask"))?;
            let mask = u32::from_le_bytes([b[0], b[1], b[2], 0]);
            let mut pos = at + 3;
            let len =
                usize::try_from(get_varint(bytes, &mut pos)?).map_err(|_| Malformed("block too long"))?;
            at = pos;
            (mask, len)
        } else {
            let mask = word(bytes, at, "short mask")?;
            let len = word(bytes, at + 4, "short block length")? as usize;
            at += 8;
            (mask, len)
        };
        let block = at.checked_add(len).and_then(|end| bytes.get(at..end)).ok_or(Malformed("short block"))?;
        at += len;
        if want != slot {
            continue;
        }
        next.next();
        masks[i] = mask & 0x00ff_ffff;
        if counts {
            let (mut pos, mut hours) = (0, masks[i]);
            while hours != 0 {
                let h = hours.trailing_zeros() as usize;
                hours &= hours - 1;
                // Most counts take one byte.
                let count = match block.get(pos) {
                    Some(&byte) if byte < 0x80 => {
                        pos += 1;
                        u64::from(byte)
                    }
                    _ => get_varint(block, &mut pos)?,
                };
                each(i, h, count);
            }
        }
    }
    Ok(masks)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos).ok_or(Malformed("short count"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Malformed("count longer than 64 bits"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rows_round_trip_and_partial_reads_agree(
            held in proptest::collection::vec(any::<u32>(), SLOTS),
            seed in any::<u64>(),
            wanted in proptest::sample::subsequence((0..SLOTS).collect::<Vec<_>>(), 0..SLOTS),
        ) {
            let mut row = DayRow::default();
            for h in 0..24 {
                let slots = held.iter().enumerate().fold(0u32, |m, (s, bits)| m | (((bits >> h) & 1) << s));
                let hour: Hour = std::array::from_fn(|s| seed.rotate_left((s * 7 + h) as u32) >> (s * 3));
                row.set(h, slots, &hour);
            }
            let bytes = row.encode();
            prop_assert_eq!(DayRow::decode(&bytes).unwrap(), row.clone());
            let mut seen = vec![[0u64; 24]; wanted.len()];
            let masks = decode_slots(&bytes, &wanted, true, |i, h, c| seen[i][h] = c).unwrap();
            for (i, &s) in wanted.iter().enumerate() {
                prop_assert_eq!(masks[i], row.held[s]);
                for h in held_hours(row.held[s]) {
                    prop_assert_eq!(seen[i][h], row.counts[s][h]);
                }
            }
        }
    }

    /// A row as stores of format 1 wrote it: every slot, as a 4-byte mask and a 4-byte length
    /// before its counts.
    pub(crate) fn wide(row: &DayRow) -> Vec<u8> {
        let mut out = Vec::new();
        for (slot, counts) in row.counts.iter().enumerate() {
            let mut block = Vec::new();
            for h in held_hours(row.held[slot]) {
                put_varint(&mut block, counts[h]);
            }
            out.extend_from_slice(&row.held[slot].to_le_bytes());
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    proptest! {
        #[test]
        fn rows_of_stores_from_before_read_as_they_were_written(
            held in proptest::collection::vec(any::<u32>().prop_map(|m| m & 0x00ff_ffff), SLOTS),
            seed in any::<u64>(),
            wanted in proptest::sample::subsequence((0..SLOTS).collect::<Vec<_>>(), 0..SLOTS),
        ) {
            let mut row = DayRow::default();
            for (slot, mask) in held.iter().enumerate() {
                for h in held_hours(*mask) {
                    row.held[slot] |= 1 << h;
                    row.counts[slot][h] = seed.rotate_left((slot * 3 + h) as u32) >> (h % 50);
                }
            }
            let (old, new) = (wide(&row), row.encode());
            prop_assert_eq!(DayRow::decode(&old).unwrap(), row.clone());
            prop_assert!(new.len() <= old.len());
            let mut from_old = vec![[0u64; 24]; wanted.len()];
            let mut from_new = vec![[0u64; 24]; wanted.len()];
            let old_masks = decode_slots(&old, &wanted, true, |i, h, c| from_old[i][h] = c).unwrap();
            let new_masks = decode_slots(&new, &wanted, true, |i, h, c| from_new[i][h] = c).unwrap();
            prop_assert_eq!(old_masks, new_masks);
            prop_assert_eq!(from_old, from_new);
        }

        #[test]
        fn a_day_encoded_from_its_hours_is_the_row_they_make(
            slots in any::<u32>().prop_map(|m| m & ((1 << SLOTS) - 1)),
            held in any::<u32>().prop_map(|m| m & 0x00ff_ffff),
            seed in any::<u64>(),
        ) {
            let hours: Vec<(usize, Hour)> = held_hours(held)
                .map(|h| (h, std::array::from_fn(|s| seed.rotate_left((s * 5 + h) as u32) >> (h % 40))))
                .collect();
            let mut row = DayRow::default();
            for (h, hour) in &hours {
                row.set(*h, slots, hour);
            }
            // Each hour's counts of the slots asked only, in slot order.
            let asked: Vec<(usize, Vec<u64>)> =
                hours.iter().map(|(h, hour)| (*h, slots_in(slots).map(|s| hour[s]).collect())).collect();
            let by_ref: Vec<(usize, &[u64])> = asked.iter().map(|(h, counts)| (*h, counts.as_slice())).collect();
            prop_assert_eq!(encode_hours(slots, &by_ref), row.encode());
        }
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let mut row = DayRow::default();
        row.set(3, u32::MAX, &[u64::MAX; SLOTS]);
        let bytes = row.encode();
        for cut in 0..bytes.len() {
            assert!(DayRow::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
