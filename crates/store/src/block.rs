//! Several days of one Tweet kept as one value: a call's 28-day window of 25 Tweets is 50
//! to 75 values to write, not seven hundred, and a question's range is read in as few. Each
//! value written costs the database about the same whatever its size up to a page, so 16
//! days (a page holds two or three blocks) cost a cold question a third less to write than 8
//! did; longer blocks save little more, and are merged more often with the window next to
//! them.
//!
//! A block holds the days `block * BLOCK_DAYS ..` of the next [`BLOCK_DAYS`], each present
//! once, ascending: per day one byte (its place in the block), the length of its row
//! (LEB128), and the row as [`crate::row`] writes it. Stores of format 3 kept blocks of
//! [`OLD_BLOCK_DAYS`], laid out alike.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::row::{DayRow, Malformed, get_varint, put_varint};

/// Days per block.
pub const BLOCK_DAYS: i64 = 16;

/// Days per block in stores of format 3.
pub const OLD_BLOCK_DAYS: i64 = 8;

/// The block a day is kept in.
pub fn block_of(day: i64) -> i64 {
    day.div_euclid(BLOCK_DAYS)
}

/// The days a block's bytes hold: (day number, its row), ascending.
pub fn days(block: i64, bytes: &[u8]) -> Days<'_> {
    days_of(block, BLOCK_DAYS, bytes)
}

/// The days the bytes of block `block` of blocks of `span` days hold.
pub fn days_of(block: i64, span: i64, bytes: &[u8]) -> Days<'_> {
    Days { first: block * span, span, bytes, at: 0 }
}

/// The days of one block, read in turn.
#[derive(Debug)]
pub struct Days<'a> {
    first: i64,
    span: i64,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Days<'a> {
    type Item = Result<(i64, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = *self.bytes.get(self.at)?;
        let mut at = self.at + 1;
        let read = get_varint(self.bytes, &mut at).and_then(|len| {
            let row = usize::try_from(len)
                .ok()
                .and_then(|len| at.checked_add(len))
                .and_then(|end| self.bytes.get(at..end))
                .ok_or(Malformed("short day in a block"))?;
            if i64::from(offset) >= self.span {
                return Err(Malformed("a day past its block"));
            }
            Ok((self.first + i64::from(offset), row))
        });
        match read {
            Ok((day, row)) => {
                self.at = at + row.len();
                Some(Ok((day, row)))
            }
            Err(e) => {
                // Nothing after a malformed day is read.
                self.at = self.bytes.len();
                Some(Err(e))
            }
        }
    }
}

/// A block of `days` (ascending, each once, all of one block): (day number, row).
pub fn encode<R: AsRef<[u8]>>(days: &[(i64, R)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(days.iter().map(|(_, r)| r.as_ref().len() + 3).sum());
    for (day, row) in days {
        put_day(&mut out, *day, row.as_ref());
    }
    out
}

/// Appends day `day`'s `row` to a block's bytes (its days before it already there).
pub fn put_day(out: &mut Vec<u8>, day: i64, row: &[u8]) {
    out.push(day.rem_euclid(BLOCK_DAYS) as u8);
    put_varint(out, row.len() as u64);
    out.extend_from_slice(row);
}

/// Block `block` as `older` holds it with `newer`'s days laid over it: a day in both is
/// merged hour by hour, newer counts winning.
pub fn merge(block: i64, older: &[u8], newer: &[u8]) -> Result<Vec<u8>, Malformed> {
    // At most eight days: a map keeps them ascending.
    let mut merged: BTreeMap<i64, Cow<'_, [u8]>> = BTreeMap::new();
    for day in days(block, older) {
        let (day, row) = day?;
        merged.insert(day, Cow::Borrowed(row));
    }
    for day in days(block, newer) {
        let (day, row) = day?;
        let row = match merged.get(&day) {
            Some(old) => {
                let mut both = DayRow::decode(old)?;
                both.overlay(&DayRow::decode(row)?);
                Cow::Owned(both.encode())
            }
            None => Cow::Borrowed(row),
        };
        merged.insert(day, row);
    }
    Ok(encode(&merged.into_iter().collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::encode_hours;

    fn row(slots: u32, hour: usize, count: u64) -> Vec<u8> {
        let counts = vec![count; slots.count_ones() as usize];
        encode_hours(slots, &[(hour, counts.as_slice())])
    }

    #[test]
    fn a_block_reads_back_its_days_and_merges_day_by_day() {
        let block = -3;
        let first = block * BLOCK_DAYS;
        let old = encode(&[(first, row(0b1, 0, 5)), (first + 2, row(0b1, 1, 6))]);
        let read: Vec<(i64, Vec<u8>)> =
            days(block, &old).map(|d| d.map(|(day, r)| (day, r.to_vec())).unwrap()).collect();
        assert_eq!(read, [(first, row(0b1, 0, 5)), (first + 2, row(0b1, 1, 6))]);

        let new = encode(&[(first + 2, row(0b10, 1, 7)), (first + 7, row(0b1, 23, 8))]);
        let merged = merge(block, &old, &new).unwrap();
        let days: Vec<(i64, DayRow)> = days(block, &merged)
            .map(|d| d.map(|(day, r)| (day, DayRow::decode(r).unwrap())).unwrap())
            .collect();
        assert_eq!(days.iter().map(|(d, _)| d - first).collect::<Vec<_>>(), [0, 2, 7]);
        let both = &days[1].1;
        assert_eq!((both.held[0], both.counts[0][1]), (1 << 1, 6), "the older type stays");
        assert_eq!((both.held[1], both.counts[1][1]), (1 << 1, 7), "the newer type is added");
        assert_eq!(block_of(first + BLOCK_DAYS - 1), block);
        assert_eq!(block_of(first + BLOCK_DAYS), block + 1);
    }

    #[test]
    fn cut_or_wrong_blocks_are_an_error_not_a_panic() {
        let whole = encode(&[(0, row(0b1, 0, 300))]);
        for cut in 0..whole.len() {
            let read: Result<Vec<_>, _> = days(0, &whole[..cut]).collect();
            assert!(cut == 0 || read.is_err(), "{cut}");
        }
        assert!(days(0, &[BLOCK_DAYS as u8, 0]).next().unwrap().is_err(), "a day past its block");
        assert!(days_of(0, OLD_BLOCK_DAYS, &[9, 0]).next().unwrap().is_err(), "a day past its block");
    }
}
