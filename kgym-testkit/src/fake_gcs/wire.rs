//! Wire formats of the fake: the XML it reads and writes, `Range`
//! headers, listing continuation tokens, percent-encoded object names.

/// `<Part><PartNumber>n</PartNumber><ETag>e</ETag></Part>`... in any field
/// order, as `(n, e)` pairs in document order.
pub(super) fn parse_complete_body(xml: &str) -> Option<Vec<(usize, String)>> {
    let mut parts = Vec::new();
    for part in xml.split("<Part>").skip(1) {
        let part = part.split("</Part>").next()?;
        let number = tag_text(part, "PartNumber")?.trim().parse().ok()?;
        let etag = xml_unescape(tag_text(part, "ETag")?.trim());
        parts.push((number, etag));
    }
    xml.contains("<CompleteMultipartUpload").then_some(parts)
}

fn tag_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

/// Where a listing resumes: after a key, or after every key under a
/// `CommonPrefixes` entry already returned.
pub(super) enum Resume {
    AfterKey(String),
    AfterPrefix(String),
}

/// Opaque to clients, like GCS's tokens.
pub(super) fn encode_token(resume: &Resume) -> String {
    match resume {
        Resume::AfterKey(k) => format!("k{}", hex::encode(k)),
        Resume::AfterPrefix(p) => format!("p{}", hex::encode(p)),
    }
}

pub(super) fn decode_token(token: &str) -> Option<Resume> {
    let text = |hex_part: &str| String::from_utf8(hex::decode(hex_part).ok()?).ok();
    match token.split_at_checked(1)? {
        ("k", rest) => text(rest).map(Resume::AfterKey),
        ("p", rest) => text(rest).map(Resume::AfterPrefix),
        _ => None,
    }
}

/// One `Range: bytes=...` spec (multi-range requests are served whole).
pub(super) enum ByteRange {
    FromTo(usize, usize),
    From(usize),
    Suffix(usize),
}

impl ByteRange {
    /// `[start, end)` within an object of `len` bytes, `None` when
    /// unsatisfiable.
    pub(super) fn resolve(&self, len: usize) -> Option<(usize, usize)> {
        match *self {
            Self::FromTo(a, b) if a < len && a <= b => Some((a, (b + 1).min(len))),
            Self::From(a) if a < len => Some((a, len)),
            Self::Suffix(n) if n > 0 && len > 0 => Some((len - n.min(len), len)),
            _ => None,
        }
    }
}

pub(super) fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    match (a.trim(), b.trim()) {
        ("", n) => n.parse().ok().map(ByteRange::Suffix),
        (a, "") => a.parse().ok().map(ByteRange::From),
        (a, b) => Some(ByteRange::FromTo(a.parse().ok()?, b.parse().ok()?)),
    }
}

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Decodes `%XX` escapes (no `+`-as-space: that is for query strings only);
/// `None` for malformed escapes or non-UTF-8 results.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_http() {
        let r = |s: &str| parse_range(s).and_then(|r| r.resolve(10));
        assert_eq!(r("bytes=2-4"), Some((2, 5)));
        assert_eq!(r("bytes=8-100"), Some((8, 10)));
        assert_eq!(r("bytes=7-"), Some((7, 10)));
        assert_eq!(r("bytes=-3"), Some((7, 10)));
        assert_eq!(r("bytes=-30"), Some((0, 10)));
        assert_eq!(r("bytes=10-"), None);
        assert!(parse_range("bytes=0-1,3-4").is_none());
    }

    #[test]
    fn complete_body_parses_object_stores_xml() {
        let xml = "<CompleteMultipartUpload><Part><ETag>\"a\"</ETag><PartNumber>1</PartNumber></Part>\
                   <Part><ETag>&quot;b&quot;</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>";
        assert_eq!(parse_complete_body(xml).unwrap(), vec![(1, "\"a\"".to_owned()), (2, "\"b\"".to_owned())]);
        assert!(parse_complete_body("<Other/>").is_none());
    }

    #[test]
    fn names_and_tokens_round_trip() {
        assert_eq!(percent_decode("jobs%2F0%2Fa%2Bb").as_deref(), Some("jobs/0/a+b"));
        assert!(percent_decode("bad%zz").is_none());
        let Some(Resume::AfterPrefix(p)) = decode_token(&encode_token(&Resume::AfterPrefix("a/b/".into()))) else {
            panic!("token did not round-trip");
        };
        assert_eq!(p, "a/b/");
        assert!(decode_token("xyz").is_none());
    }
}
