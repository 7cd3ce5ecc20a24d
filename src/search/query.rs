//! The query language of search, turned into an FTS5 expression.
//!
//! What people type: words (all must match, in the name or the text), the
//! last word also as the start of a word (so results come while typing),
//! `"two words"` for a phrase, `from:ana` for names containing the word
//! `ana`, and `-word` to leave out messages with that word. Everything the
//! user typed reaches FTS5 inside double quotes, where only the tokenizer
//! looks at it: no character can make the expression fail to parse, and
//! punctuation simply separates words as it does in the messages.

/// The longest query taken, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// The most terms (words, phrases, `from:` and `-` terms) in one query.
pub const MAX_TERMS: usize = 16;

/// A parsed search query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The FTS5 expression; `None` when the query has nothing to look for
    /// (empty, only punctuation, or only `-` terms): it finds nothing.
    expression: Option<String>,
}

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query is longer than {MAX_QUERY_CHARS} characters")]
    TooLong,
    #[error("the query has more than {MAX_TERMS} words, phrases and filters")]
    TooManyTerms,
}

/// One thing to look for, as typed.
#[derive(Debug)]
struct Term {
    text: String,
    /// A phrase in quotes that were closed: matched whole, never as a
    /// prefix. A word, or a phrase still being typed, is.
    closed: bool,
    /// `-word`: messages with it are left out.
    excluded: bool,
    /// `from:word`: looked for in the name only.
    from: bool,
}

impl Query {
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong);
        }
        let terms = terms(text);
        if terms.len() > MAX_TERMS {
            return Err(QueryError::TooManyTerms);
        }
        Ok(Query {
            expression: expression(&terms),
        })
    }

    /// The FTS5 expression to `MATCH`, or `None` for a query that finds nothing.
    pub fn expression(&self) -> Option<&str> {
        self.expression.as_deref()
    }
}

/// Splits the query into terms: runs of non-space characters, or quoted
/// phrases (an unclosed quote runs to the end), each possibly after `-` or
/// `from:`. Terms with nothing a word is made of are dropped.
fn terms(text: &str) -> Vec<Term> {
    let mut terms = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let mut excluded = false;
        let mut from = false;
        if let Some(after) = rest.strip_prefix('-') {
            excluded = true;
            rest = after;
        }
        if let Some(after) = strip_prefix_ignoring_case(rest, "from:") {
            from = true;
            rest = after;
        }
        let (text, closed, after) = match rest.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (&quoted[..end], true, &quoted[end + 1..]),
                None => (quoted, false, ""),
            },
            None => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (&rest[..end], false, &rest[end..])
            }
        };
        if text.chars().any(char::is_alphanumeric) {
            terms.push(Term {
                text: text.to_owned(),
                closed,
                excluded,
                from,
            });
        }
        rest = after.trim_start();
    }
    terms
}

impl Term {
    /// The term as FTS5 matches it: its text quoted, as a prefix when
    /// `prefix`, in the name column only for `from:`.
    fn expression(&self, prefix: bool) -> String {
        let text = quoted(&self.text);
        let text = if prefix { format!("{text} *") } else { text };
        if self.from {
            format!("name : {text}")
        } else {
            text
        }
    }
}

/// `text` after `prefix` (ASCII), in any case.
fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.get(..prefix.len())
        .filter(|start| start.eq_ignore_ascii_case(prefix))
        .map(|_| &text[prefix.len()..])
}

/// The FTS5 expression for `terms`: every kept term ANDed, the last word
/// a prefix, then each excluded term taken away with NOT.
fn expression(terms: &[Term]) -> Option<String> {
    let last_kept = terms.iter().rposition(|t| !t.excluded);
    let mut kept = Vec::new();
    for (i, term) in terms.iter().enumerate().filter(|(_, t)| !t.excluded) {
        let prefix = Some(i) == last_kept && i == terms.len() - 1 && !term.closed;
        kept.push(term.expression(prefix));
    }
    if kept.is_empty() {
        return None;
    }
    let mut expression = format!("({})", kept.join(" AND "));
    for term in terms.iter().filter(|t| t.excluded) {
        expression = format!("({expression} NOT {})", term.expression(false));
    }
    Some(expression)
}

/// `text` as an FTS5 string: inside double quotes, with any double quote
/// doubled, so FTS5 sees only text for its tokenizer.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fts(text: &str) -> Option<String> {
        Query::parse(text).unwrap().expression().map(str::to_owned)
    }

    #[test]
    fn every_word_must_match_and_the_last_is_also_a_prefix() {
        assert_eq!(
            fts("printer add").as_deref(),
            Some(r#"("printer" AND "add" *)"#)
        );
    }

    #[test]
    fn a_closed_phrase_is_matched_whole_and_an_open_one_as_typed_so_far() {
        assert_eq!(
            fts(r#""door code" today"#).as_deref(),
            Some(r#"("door code" AND "today" *)"#)
        );
        assert_eq!(
            fts(r#"today "door co"#).as_deref(),
            Some(r#"("today" AND "door co" *)"#)
        );
    }

    #[test]
    fn from_looks_in_names_and_a_minus_leaves_out() {
        assert_eq!(
            fts("from:ana printer -toner").as_deref(),
            Some(r#"((name : "ana" AND "printer") NOT "toner")"#)
        );
        assert_eq!(
            fts("FROM:\"Ana Lee\" x").as_deref(),
            Some(r#"(name : "Ana Lee" AND "x" *)"#)
        );
    }

    #[test]
    fn punctuation_and_quotes_never_reach_fts5_unquoted() {
        for nothing in [
            "",
            "   ",
            "\"",
            "*",
            "(",
            ")",
            "-",
            "from:",
            "\"\"",
            "- * ( ^ :",
        ] {
            assert_eq!(fts(nothing), None, "{nothing:?}");
        }
        assert_eq!(
            fts(r#"a"b NEAR(x) c*"#).as_deref(),
            Some(r#"("a""b" AND "NEAR(x)" AND "c*" *)"#)
        );
    }

    #[test]
    fn only_words_to_leave_out_find_nothing() {
        assert_eq!(fts("-spam -junk"), None);
    }

    #[test]
    fn long_queries_and_many_terms_are_refused() {
        assert_eq!(
            Query::parse(&"x".repeat(MAX_QUERY_CHARS + 1)),
            Err(QueryError::TooLong)
        );
        assert!(Query::parse(&"é".repeat(MAX_QUERY_CHARS)).is_ok());
        assert!(
            Query::parse("fromé:é -é").is_ok(),
            "multi-byte text where from: could be"
        );
        let many = vec!["w"; MAX_TERMS + 1].join(" ");
        assert_eq!(Query::parse(&many), Err(QueryError::TooManyTerms));
    }
}
