//! The OpenAPI schemas of a question's members, beside the types they describe
//! ([`crate::request::QuestionBody`]), so the published document says what is read.

/// At least one Tweet ID, as a decimal string or an integer, from 1 to the newest ID that
/// can exist now (minted before the end of the hour in progress; the document is made
/// afresh for each request, so its bound moves as the service's does).
pub fn tweet_ids() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let newest = crate::TweetId::newest(chrono::Utc::now()).0;
    let as_text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^({})$", decimal_at_most(newest))))
        .examples([serde_json::json!("1790000000000000000")]);
    let as_number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(newest));
    ArrayBuilder::new().items(OneOfBuilder::new().item(as_text).item(as_number)).min_items(Some(1)).build()
}

/// A regular expression (alternatives, without anchors) for the decimal numbers from 1 to
/// `n` without leading zeros.
fn decimal_at_most(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let k = digits.len();
    let mut alternatives = Vec::new();
    // Fewer digits than n.
    if k > 1 {
        alternatives.push(format!("[1-9][0-9]{{0,{}}}", k - 2));
    }
    // As many digits: n's first i digits, then a smaller one, then any.
    for i in 0..k {
        let low = if i == 0 { 1 } else { 0 };
        if digits[i] > low {
            let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
            let rest = k - i - 1;
            alternatives.push(format!("{prefix}[{low}-{}][0-9]{{{rest}}}", digits[i] - 1));
        }
    }
    alternatives.push(n.to_string());
    alternatives.join("|")
}

/// At least one of `endpoint`'s types.
fn types_of(endpoint: crate::Endpoint) -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let names: Vec<&str> = endpoint.types().map(|t| t.name()).collect();
    let name = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names));
    ArrayBuilder::new().items(name).min_items(Some(1)).build()
}

/// The types of `/historical` and `/28hr`.
pub fn engagement_types() -> utoipa::openapi::Array {
    types_of(crate::Endpoint::Historical)
}

/// The types of `/totals`.
pub fn totals_engagement_types() -> utoipa::openapi::Array {
    types_of(crate::Endpoint::Totals)
}

/// `/totals`' groupings: by Tweet, by type, or both (no time levels).
pub fn totals_groupings() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let level =
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["tweet.id", "engagement.type"]));
    let group_by = ArrayBuilder::new().items(level).min_items(Some(1)).max_items(Some(2)).unique_items(true);
    let spec =
        ObjectBuilder::new().schema_type(Type::Object).property("group_by", group_by).required("group_by");
    named(spec.into())
}

/// 1 to 3 named groupings; a name may not be one of the answer's own members.
pub fn groupings() -> utoipa::openapi::Object {
    named(utoipa::openapi::Ref::from_schema_name("GroupingSpec").into())
}

/// 1 to 3 groupings, each `spec`, under names that are not the answer's own members.
fn named(spec: utoipa::openapi::RefOr<utoipa::openapi::Schema>) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let reserved = crate::tree::RESERVED_MEMBERS.join("|");
    let name = ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^(?!({reserved})$)")));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(spec))
        .property_names(Some(name))
        .min_properties(Some(1))
        .max_properties(Some(crate::vocabulary::MAX_GROUPINGS))
        .build()
}

/// 1 to 3 distinct levels, or all 4 in one of the two orders the API allows.
pub fn group_by() -> utoipa::openapi::schema::Schema {
    levels(&["engagement.day"])
}

/// `group_by` on the service's own endpoints: the API's levels, and `engagement.week` and
/// `engagement.month` wherever `engagement.day` may be.
pub fn native_group_by() -> utoipa::openapi::schema::Schema {
    levels(&["engagement.day", "engagement.week", "engagement.month"])
}

/// 1 to 3 distinct levels, or the two orders of 4 with one of `periods` third.
fn levels(periods: &[&str]) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let level =
        |names: &[&str]| ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names.to_vec()));
    let mut all = vec!["tweet.id", "engagement.type", "engagement.hour"];
    all.extend(periods);
    let few = ArrayBuilder::new().items(level(&all)).min_items(Some(1)).max_items(Some(3)).unique_items(true);
    let mut choices = OneOfBuilder::new().item(few);
    for first in [["tweet.id", "engagement.type"], ["engagement.type", "tweet.id"]] {
        let fixed = ArrayBuilder::new()
            .prefix_items([
                level(&[first[0]]),
                level(&[first[1]]),
                level(periods),
                level(&["engagement.hour"]),
            ])
            .items(utoipa::openapi::schema::ArrayItems::False)
            .min_items(Some(4));
        choices = choices.item(fixed);
    }
    utoipa::openapi::schema::Schema::OneOf(choices.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_at_most_n_are_every_shorter_number_then_each_smaller_prefix() {
        assert_eq!(decimal_at_most(7), "[1-6][0-9]{0}|7");
        assert_eq!(decimal_at_most(1790), "[1-9][0-9]{0,2}|1[0-6][0-9]{2}|17[0-8][0-9]{1}|1790");
        assert_eq!(decimal_at_most(20), "[1-9][0-9]{0,0}|[1-1][0-9]{1}|20");
    }
}
