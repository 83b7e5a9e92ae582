//! An answer as CSV (RFC 4180: CRLF line ends, quoted cells), for spreadsheets: one row
//! per count, in the order the JSON answer writes them, with an empty cell for each level
//! a grouping does not have.

use std::io::{self, Write};

use crate::tree::Response;
use crate::vocabulary::{GroupBy, Grouping};

/// The header row's cells.
pub const HEADER: [&str; 8] =
    ["grouping", "tweet_id", "engagement_type", "week", "month", "day", "hour", "count"];

/// The cell of each level, in [`HEADER`]'s order after `grouping`.
fn column(level: GroupBy) -> usize {
    match level {
        GroupBy::TweetId => 0,
        GroupBy::EngagementType => 1,
        GroupBy::EngagementWeek => 2,
        GroupBy::EngagementMonth => 3,
        GroupBy::EngagementDay => 4,
        GroupBy::EngagementHour => 5,
    }
}

/// Writes `response` as CSV: a header, then a row per count of each grouping (named in
/// `groupings`, which say what each level is), groupings in the answer's order.
pub fn write(response: &Response, groupings: &[Grouping], out: &mut dyn Write) -> io::Result<()> {
    write!(out, "{}\r\n", HEADER.join(","))?;
    let mut failed = None;
    for (name, tree) in &response.groupings {
        let Some(grouping) = groupings.iter().find(|g| &g.name == name) else {
            continue;
        };
        let name = cell(name);
        let columns: Vec<usize> = grouping.group_by.iter().map(|l| column(*l)).collect();
        let mut line = String::with_capacity(96);
        tree.for_each_count(&mut |path, count| {
            if failed.is_some() {
                return;
            }
            let mut cells = [""; 6];
            for (key, col) in path.iter().zip(&columns) {
                cells[*col] = key;
            }
            line.clear();
            line.push_str(&name);
            for c in cells {
                line.push(',');
                line.push_str(c);
            }
            line.push(',');
            line.push_str(&count.to_string());
            line.push_str("\r\n");
            if let Err(e) = out.write_all(line.as_bytes()) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// A cell as RFC 4180 writes it: quoted (with quotes doubled) when it holds a comma, a
/// quote or a line break. Only grouping names, which clients choose, can.
fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Branch, Node};

    fn branch(entries: Vec<(&'static str, Node)>) -> Node {
        Node::Branch(Branch::from_entries(entries.into_iter().map(|(k, v)| (k.into(), v)).collect()))
    }

    #[test]
    fn one_row_per_count_with_empty_cells_for_missing_levels() {
        let mut response = Response::default();
        response.groupings.insert(
            "hour, of day".into(),
            branch(vec![("impressions", branch(vec![("00", Node::Count(3)), ("01", Node::Count(0))]))]),
        );
        response
            .groupings
            .insert("by tweet".into(), branch(vec![("42", branch(vec![("favorites", Node::Count(9))]))]));
        let groupings = vec![
            Grouping {
                name: "hour, of day".into(),
                group_by: vec![GroupBy::EngagementType, GroupBy::EngagementHour],
            },
            Grouping { name: "by tweet".into(), group_by: vec![GroupBy::TweetId, GroupBy::EngagementType] },
        ];
        let mut out = Vec::new();
        write(&response, &groupings, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "grouping,tweet_id,engagement_type,week,month,day,hour,count\r\n\
             by tweet,42,favorites,,,,,9\r\n\
             \"hour, of day\",,impressions,,,,00,3\r\n\
             \"hour, of day\",,impressions,,,,01,0\r\n"
        );
    }
}
