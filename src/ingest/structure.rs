//! A structural check of an encoded data set: every element's length fits in what was received,
//! sequences and items are closed, encapsulated pixel data is well formed, and nothing trails.
//!
//! It reads element headers and skips values, so it costs no memory whatever the instance size.
//! A parser that stops quietly at a premature end of data would accept a truncated instance; this
//! check does not.

use std::io::{self, BufRead, BufReader, Read, Seek};

use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITER: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Deeper nesting than this is not a real instance (and deeper recursion could exhaust a stack).
const MAX_DEPTH: usize = 32;

/// Explicit VRs whose length field is 4 bytes, after 2 reserved bytes.
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

struct Walker<R> {
    reader: BufReader<R>,
    position: u64,
    end: u64,
    explicit_vr: bool,
}

type Tag = (u16, u16);

/// Where a run of elements stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    End,
    ItemDelimiter,
    Position(u64),
}

fn describe(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.0, tag.1)
}

impl<R: Read + Seek> Walker<R> {
    fn remaining(&self) -> u64 {
        self.end - self.position
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), String> {
        self.reader
            .read_exact(buf)
            .map_err(|_| format!("data set ends inside {what} at byte {}", self.position))?;
        self.position += buf.len() as u64;
        Ok(())
    }

    fn read_tag(&mut self) -> Result<Tag, String> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b, "an element tag")?;
        Ok((
            u16::from_le_bytes([b[0], b[1]]),
            u16::from_le_bytes([b[2], b[3]]),
        ))
    }

    fn read_u32(&mut self, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn skip(&mut self, tag: Tag, length: u32) -> Result<(), String> {
        if u64::from(length) > self.remaining() {
            return Err(format!(
                "element {} declares {length} bytes but only {} remain",
                describe(tag),
                self.remaining()
            ));
        }
        self.reader
            .seek_relative(i64::from(length))
            .map_err(|e| format!("cannot read the data set: {e}"))?;
        self.position += u64::from(length);
        Ok(())
    }

    /// Read an element header after its tag; returns the value length and whether the element
    /// is a sequence (its VR says SQ; with implicit VR, the dictionary does, as for the parser).
    fn read_header(&mut self, tag: Tag) -> Result<(u32, bool), String> {
        if tag.0 == 0xFFFE {
            return Ok((self.read_u32("an element length")?, false));
        }
        if !self.explicit_vr {
            let sequence = StandardDataDictionary
                .by_tag(dicom_core::Tag(tag.0, tag.1))
                .is_some_and(|entry| entry.vr().relaxed() == VR::SQ);
            return Ok((self.read_u32("an element length")?, sequence));
        }
        let mut vr = [0u8; 2];
        self.read_exact(&mut vr, "a value representation")?;
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(format!("element {} has no valid VR", describe(tag)));
        }
        let length = if LONG_VRS.contains(&&vr) {
            let mut reserved = [0u8; 2];
            self.read_exact(&mut reserved, "an element header")?;
            self.read_u32("an element length")?
        } else {
            let mut b = [0u8; 2];
            self.read_exact(&mut b, "an element length")?;
            u32::from(u16::from_le_bytes(b))
        };
        Ok((length, &vr == b"SQ"))
    }

    /// Where the value of `length` bytes that starts here ends, if it fits inside `within`.
    fn value_end(&self, tag: Tag, length: u32, within: u64) -> Result<u64, String> {
        let end = self.position + u64::from(length);
        if end > within {
            return Err(format!(
                "element {} declares {length} bytes but only {} remain around it",
                describe(tag),
                within - self.position
            ));
        }
        Ok(end)
    }

    /// Elements until `until`: the end of the data, an item delimiter, or the end of a
    /// defined-length item. Nesting is walked whatever the lengths say, so a parser that
    /// recurses into it meets no deeper nesting than [`MAX_DEPTH`].
    fn elements(&mut self, until: Until, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("sequences nested too deeply".into());
        }
        let within = match until {
            Until::Position(end) => end,
            _ => self.end,
        };
        loop {
            match until {
                Until::End if self.remaining() == 0 => return Ok(()),
                Until::Position(end) if self.position == end => return Ok(()),
                _ => {}
            }
            let tag = self.read_tag()?;
            if tag == ITEM_DELIMITER && until == Until::ItemDelimiter {
                self.read_u32("an item delimiter")?;
                return Ok(());
            }
            if tag.0 == 0xFFFE {
                return Err(format!(
                    "unexpected delimiter {} at byte {}",
                    describe(tag),
                    self.position - 4
                ));
            }
            let (length, sequence) = self.read_header(tag)?;
            if length == UNDEFINED && tag == PIXEL_DATA {
                self.fragments()?;
            } else if length == UNDEFINED {
                // Undefined length: a sequence, whatever the VR says (implicit VR has none).
                self.items(None, depth + 1)?;
            } else if sequence {
                let end = self.value_end(tag, length, within)?;
                self.items(Some(end), depth + 1)?;
            } else {
                self.value_end(tag, length, within)?;
                self.skip(tag, length)?;
            }
        }
    }

    /// The items of a sequence, until its delimiter (`end` None) or its defined end.
    fn items(&mut self, end: Option<u64>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("sequences nested too deeply".into());
        }
        loop {
            if end == Some(self.position) {
                return Ok(());
            }
            let tag = self.read_tag()?;
            let length = self.read_u32("an item length")?;
            match tag {
                SEQUENCE_DELIMITER if end.is_none() => return Ok(()),
                ITEM if length == UNDEFINED => self.elements(Until::ItemDelimiter, depth)?,
                ITEM => {
                    let item_end = self.value_end(tag, length, end.unwrap_or(self.end))?;
                    self.elements(Until::Position(item_end), depth)?;
                }
                other => {
                    return Err(format!(
                        "expected an item in a sequence, found {}",
                        describe(other)
                    ));
                }
            }
            if end.is_some_and(|e| self.position > e) {
                return Err("an item runs past the end of its sequence".into());
            }
        }
    }

    /// Encapsulated pixel data: a basic offset table item, fragment items, a sequence delimiter.
    fn fragments(&mut self) -> Result<(), String> {
        loop {
            let tag = self.read_tag()?;
            let length = self.read_u32("a fragment length")?;
            match tag {
                SEQUENCE_DELIMITER => return Ok(()),
                ITEM if length != UNDEFINED => self.skip(tag, length)?,
                other => return Err(format!("malformed pixel data fragment {}", describe(other))),
            }
        }
    }
}

/// Check the data set that starts at `offset` in `source` and runs to its end.
pub fn check_data_set<R: Read + Seek>(
    mut source: R,
    offset: u64,
    explicit_vr: bool,
) -> Result<(), String> {
    let end = source
        .seek(io::SeekFrom::End(0))
        .map_err(|e| e.to_string())?;
    source
        .seek(io::SeekFrom::Start(offset))
        .map_err(|e| e.to_string())?;
    let mut walker = Walker {
        reader: BufReader::with_capacity(64 * 1024, source),
        position: offset,
        end,
        explicit_vr,
    };
    walker.elements(Until::End, 0)?;
    // Nothing may follow the last element.
    if walker
        .reader
        .fill_buf()
        .map(|b| !b.is_empty())
        .unwrap_or(false)
    {
        return Err("bytes after the last element".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        check_data_set(Cursor::new(bytes), 0, true)
    }

    #[test]
    fn well_formed_data_sets_pass() {
        let mut ds = explicit((0x0008, 0x0018), b"UI", b"1.2.3\0");
        ds.extend(explicit((0x0010, 0x0020), b"LO", b"ID"));
        assert_eq!(check(&ds), Ok(()));
        // An undefined-length sequence with one undefined-length item.
        let mut sq = vec![
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        sq.extend([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
        sq.extend(explicit((0x0008, 0x1150), b"UI", b"1.2\0"));
        sq.extend([0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
        sq.extend([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
        ds.extend(&sq);
        assert_eq!(check(&ds), Ok(()));
        // Encapsulated pixel data: empty offset table, one fragment.
        let mut px = vec![
            0xe0, 0x7f, 0x10, 0x00, b'O', b'B', 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        px.extend([0xfe, 0xff, 0x00, 0xe0, 0, 0, 0, 0]);
        px.extend([0xfe, 0xff, 0x00, 0xe0, 2, 0, 0, 0, 0xAB, 0xCD]);
        px.extend([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
        ds.extend(&px);
        assert_eq!(check(&ds), Ok(()));
    }

    /// A defined-length sequence (explicit VR when `vr`, else implicit) holding one
    /// defined-length item with `inner` in it.
    fn defined_sequence(tag: (u16, u16), vr: bool, inner: &[u8]) -> Vec<u8> {
        let mut item = vec![0xfe, 0xff, 0x00, 0xe0];
        item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        item.extend_from_slice(inner);
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        if vr {
            out.extend_from_slice(b"SQ\0\0");
        }
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend(item);
        out
    }

    #[test]
    fn nesting_inside_defined_lengths_is_walked_and_bounded() {
        let leaf = explicit((0x0008, 0x1150), b"UI", b"1.2\0");
        let one = defined_sequence((0x0008, 0x1115), true, &leaf);
        assert_eq!(check(&one), Ok(()));
        // Thousands of defined-length levels: the parser would recurse through each one.
        for explicit_vr in [true, false] {
            let mut nested = if explicit_vr {
                leaf.clone()
            } else {
                vec![0x08, 0x00, 0x50, 0x11, 4, 0, 0, 0, b'1', b'.', b'2', 0]
            };
            for _ in 0..3000 {
                nested = defined_sequence((0x0008, 0x1115), explicit_vr, &nested);
            }
            let error = check_data_set(Cursor::new(&nested), 0, explicit_vr).unwrap_err();
            assert!(error.contains("nested too deeply"), "{error}");
        }
        // An element inside an item may not claim more than the item holds.
        let mut liar = explicit((0x0010, 0x0020), b"LO", b"ID");
        liar[6] = 200;
        let mut outer = defined_sequence((0x0008, 0x1115), true, &liar);
        outer.extend(explicit((0x0010, 0x0010), b"PN", &[b'X'; 200]));
        let error = check(&outer).unwrap_err();
        assert!(error.contains("remain around it"), "{error}");
    }

    #[test]
    fn truncation_and_overlong_lengths_are_found() {
        let ds = explicit((0x0010, 0x0020), b"LO", b"PATIENT1");
        let cut = &ds[..ds.len() - 3];
        let error = check(cut).unwrap_err();
        assert!(
            error.contains("(0010,0020) declares 8 bytes but only 5 remain"),
            "{error}"
        );
        assert!(check(&ds[..5]).unwrap_err().contains("ends inside"));
        // A sequence that is never closed.
        let open_sq = vec![
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(check(&open_sq).is_err());
        let mut bad_vr = ds.clone();
        bad_vr[4] = b'?';
        assert!(check(&bad_vr).unwrap_err().contains("no valid VR"));
    }

    #[test]
    fn implicit_vr_lengths_are_four_bytes() {
        let mut ds = vec![0x10, 0x00, 0x20, 0x00, 4, 0, 0, 0];
        ds.extend(b"ABCD");
        assert_eq!(check_data_set(Cursor::new(&ds), 0, false), Ok(()));
        assert!(check_data_set(Cursor::new(&ds[..10]), 0, false).is_err());
    }
}
