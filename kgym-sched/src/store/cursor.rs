//! Listing cursors: the sort key of a page's last item, handed to clients
//! as an opaque string ([`Page::cursor`](crate::types::Page::cursor)) and
//! taken back as `after`, so the next page starts with an index seek
//! instead of skipping every item before it.

use crate::error::{Error, Result};

/// Where a listing continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// After this id (jobs in submission order, tag matches, log lines).
    Id(i64),
    /// After this (modified time in µs, job id) (jobs by modification).
    Modified(i64, i64),
}

impl Cursor {
    /// The text a page carries.
    pub fn encode(self) -> String {
        match self {
            Self::Id(id) => format!("i{id}"),
            Self::Modified(us, id) => format!("m{us}_{id}"),
        }
    }

    /// Reads a client's `after`.
    pub fn decode(text: &str) -> Result<Self> {
        let bad =
            || Error::bad_request(format!("after {text:?} is not a cursor of this listing (take it from a page)"));
        let number = |s: &str| s.parse::<i64>().map_err(|_| bad());
        if let Some(rest) = text.strip_prefix('i') {
            return Ok(Self::Id(number(rest)?));
        }
        if let Some((us, id)) = text.strip_prefix('m').and_then(|r| r.split_once('_')) {
            return Ok(Self::Modified(number(us)?, number(id)?));
        }
        Err(bad())
    }

    /// An id cursor, or a bad request naming the listing.
    pub fn id(text: &str) -> Result<i64> {
        match Self::decode(text)? {
            Self::Id(id) => Ok(id),
            Self::Modified(..) => {
                Err(Error::bad_request(format!("after {text:?} belongs to a listing by modified time")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for c in [Cursor::Id(0), Cursor::Id(i64::MAX), Cursor::Modified(-5, 7)] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        for junk in ["", "i", "x12", "i12x", "m1", "m1_", "m_2", "i99999999999999999999"] {
            assert!(matches!(Cursor::decode(junk), Err(Error::BadRequest { .. })), "{junk}");
        }
        assert!(Cursor::id("m1_2").is_err());
    }
}
