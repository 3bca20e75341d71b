//! Query strings (`a=1&b=x%20y`): parameter lookup and strict percent-decoding.

use std::borrow::Cow;

use super::error::RequestError;

/// The value of the first parameter named `name` in `query` (without the `?`),
/// percent-decoded, with `+` read as a space (HTML form encoding).
///
/// A parameter without `=` has the empty value. Names are compared after decoding. Only
/// the parameter asked for is decoded: a malformed escape elsewhere in the query is not
/// an error.
pub fn param<'q>(query: &'q str, name: &str) -> Result<Option<Cow<'q, str>>, RequestError> {
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(key).is_ok_and(|key| key == name) {
            return decode(value).map(Some);
        }
    }
    Ok(None)
}

/// Decodes `%XX` escapes and `+`; borrows when there is neither. The result must be
/// UTF-8, and every `%` must start a two-hex-digit escape.
pub fn decode(text: &str) -> Result<Cow<'_, str>, RequestError> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        out.push(match byte {
            b'+' => b' ',
            b'%' => {
                let high = bytes.next().and_then(hex).ok_or(RequestError::BadQuery)?;
                let low = bytes.next().and_then(hex).ok_or(RequestError::BadQuery)?;
                high << 4 | low
            }
            other => other,
        });
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| RequestError::BadQuery)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_borrowed() {
        let query = "token=abc.def-ghi_jkl&encoding=binary";
        let token = param(query, "token").unwrap().unwrap();
        assert!(matches!(token, Cow::Borrowed("abc.def-ghi_jkl")));
        assert_eq!(param(query, "encoding").unwrap().as_deref(), Some("binary"));
        assert_eq!(param(query, "missing").unwrap(), None);
        assert_eq!(param("", "token").unwrap(), None);
    }

    #[test]
    fn percent_and_plus_are_decoded() {
        assert_eq!(
            param("q=a%20b+c%2Bd%3d%C3%A9", "q").unwrap().as_deref(),
            Some("a b c+d=é")
        );
        assert_eq!(param("t%6Fken=x", "token").unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn first_parameter_wins_and_bare_names_are_empty() {
        assert_eq!(param("a=1&a=2", "a").unwrap().as_deref(), Some("1"));
        assert_eq!(param("flag&a=2", "flag").unwrap().as_deref(), Some(""));
        assert_eq!(param("a=1=2", "a").unwrap().as_deref(), Some("1=2"));
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for bad in ["%", "%2", "%zz", "%C3", "%ff", "a%2"] {
            assert_eq!(decode(bad), Err(RequestError::BadQuery), "{bad}");
        }
        assert_eq!(param("token=%zz", "token"), Err(RequestError::BadQuery));
        // Not the parameter asked for: ignored.
        assert_eq!(
            param("other=%zz&token=ok", "token").unwrap().as_deref(),
            Some("ok")
        );
        assert_eq!(
            param("%zz=1&token=ok", "token").unwrap().as_deref(),
            Some("ok")
        );
    }
}
