//! A structural check of an encoded data set: every element's length fits in what was received,
//! sequences and items are closed, encapsulated pixel data is well formed, and nothing trails.
//!
//! It reads element headers and skips values, so it costs no memory whatever the instance size.
//! A parser that stops quietly at a premature end of data would accept a truncated instance; this
//! check does not.

use std::io::{self, BufRead, BufReader, Read, Seek};
use std::ops::Range;
use std::path::Path;

use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;

use super::transfer_syntax::{DEFLATED_EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use super::trim_padding;

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITER: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Deeper nesting than this is not a real instance (and deeper recursion could exhaust a stack).
const MAX_DEPTH: usize = 32;

/// Explicit VRs whose length field is 2 bytes (PS3.5 7.1.2). Every other VR, one the
/// dictionary does not know included, has 2 reserved bytes and a 4-byte length: dicom-parser reads
/// it so, and the walk must read each header exactly as the parser will.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];
/// Bytes per value of the binary VRs. dicom-parser reads such a value as a whole number of
/// values, so a length that is not a multiple leaves it off by the rest and reading the next
/// header from the wrong place (which the fuzzer turned into a 4 GiB allocation).
fn value_size(vr: &[u8]) -> Option<u32> {
    match vr {
        b"SS" | b"US" | b"OW" => Some(2),
        b"AT" | b"FL" | b"SL" | b"UL" | b"OF" | b"OL" => Some(4),
        b"FD" | b"SV" | b"UV" | b"OD" | b"OV" => Some(8),
        _ => None,
    }
}

/// Under implicit VR the parser takes the dictionary's VR: the value must be a whole number of
/// values of it. Returns that VR.
pub fn check_implicit_value(tag: (u16, u16), length: u32) -> Result<Option<VR>, String> {
    let vr = StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))
        .map(|entry| entry.vr().relaxed());
    if let Some(vr) = vr {
        check_value_size(tag, vr.to_string().as_bytes(), length)?;
    }
    Ok(vr)
}

fn check_value_size(tag: Tag, vr: &[u8], length: u32) -> Result<(), String> {
    match value_size(vr) {
        Some(size) if length != UNDEFINED && !length.is_multiple_of(size) => Err(format!(
            "element {} of VR {} has {length} bytes, not a multiple of {size}",
            describe(tag),
            String::from_utf8_lossy(vr)
        )),
        _ => Ok(()),
    }
}

struct Walker<'w, R> {
    reader: BufReader<R>,
    position: u64,
    end: u64,
    explicit_vr: bool,
    /// Top-level elements whose place is asked for, and where they were found.
    wanted: &'w [dicom_core::Tag],
    found: Vec<Range<u64>>,
}

/// A tag as (group, element).
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

impl<R: Read + Seek> Walker<'_, R> {
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
            let length = self.read_u32("an element length")?;
            return Ok((length, check_implicit_value(tag, length)? == Some(VR::SQ)));
        }
        let mut vr = [0u8; 2];
        self.read_exact(&mut vr, "a value representation")?;
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(format!("element {} has no valid VR", describe(tag)));
        }
        let length = if SHORT_VRS.contains(&&vr) {
            let mut b = [0u8; 2];
            self.read_exact(&mut b, "an element length")?;
            u32::from(u16::from_le_bytes(b))
        } else {
            let mut reserved = [0u8; 2];
            self.read_exact(&mut reserved, "an element header")?;
            self.read_u32("an element length")?
        };
        check_value_size(tag, &vr, length)?;
        Ok((length, &vr == b"SQ"))
    }

    /// Where the value of `length` bytes that starts here ends, if it fits inside `within`.
    fn value_end(&self, tag: Tag, length: u32, within: u64) -> Result<u64, String> {
        let end = self.position + u64::from(length);
        if end > within {
            return Err(format!(
                "element {} declares {length} bytes but only {} remain around it",
                describe(tag),
                within.saturating_sub(self.position)
            ));
        }
        Ok(end)
    }

    /// Elements until `until`: the end of the data, an item delimiter, or the end of a
    /// defined-length item. Nesting is walked whatever the lengths say, so a parser that
    /// recurses into it meets no deeper nesting than [`MAX_DEPTH`].
    /// `limit` is the end of the nearest enclosing defined length (or of the data): nothing
    /// inside may run past it, undefined lengths included.
    fn elements(&mut self, until: Until, depth: usize, limit: u64) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("sequences nested too deeply".into());
        }
        let within = match until {
            Until::Position(end) => end,
            _ => limit,
        };
        loop {
            if self.position > within {
                return Err(format!(
                    "an element header runs past the end of its item at byte {within}"
                ));
            }
            match until {
                Until::End if self.remaining() == 0 => return Ok(()),
                Until::Position(end) if self.position == end => return Ok(()),
                _ => {}
            }
            let start = self.position;
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
                self.fragments(within)?;
            } else if length == UNDEFINED {
                // Undefined length: a sequence, whatever the VR says (implicit VR has none).
                self.items(None, depth + 1, within)?;
            } else if sequence {
                let end = self.value_end(tag, length, within)?;
                self.items(Some(end), depth + 1, end)?;
            } else {
                let end = self.value_end(tag, length, within)?;
                self.skip(tag, length)?;
                if depth == 0 && self.wanted.contains(&dicom_core::Tag(tag.0, tag.1)) {
                    self.found.push(start..end);
                }
            }
        }
    }

    /// The items of a sequence, until its delimiter (`end` None) or its defined end.
    fn items(&mut self, end: Option<u64>, depth: usize, limit: u64) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("sequences nested too deeply".into());
        }
        loop {
            if end == Some(self.position) {
                return Ok(());
            }
            if self.position > limit {
                return Err(format!(
                    "an item header runs past the end of its sequence at byte {limit}"
                ));
            }
            let tag = self.read_tag()?;
            let length = self.read_u32("an item length")?;
            match tag {
                SEQUENCE_DELIMITER if end.is_none() => return Ok(()),
                ITEM if length == UNDEFINED => self.elements(Until::ItemDelimiter, depth, limit)?,
                ITEM => {
                    let item_end = self.value_end(tag, length, limit)?;
                    self.elements(Until::Position(item_end), depth, item_end)?;
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
    fn fragments(&mut self, limit: u64) -> Result<(), String> {
        loop {
            let tag = self.read_tag()?;
            let length = self.read_u32("a fragment length")?;
            match tag {
                SEQUENCE_DELIMITER => return Ok(()),
                ITEM if length != UNDEFINED => {
                    self.value_end(tag, length, limit)?;
                    self.skip(tag, length)?
                }
                other => return Err(format!("malformed pixel data fragment {}", describe(other))),
            }
        }
    }
}

/// Check the data set that starts at `offset` in `source` and runs to its end.
pub fn check_data_set<R: Read + Seek>(
    source: R,
    offset: u64,
    explicit_vr: bool,
) -> Result<(), String> {
    check_and_locate(source, offset, explicit_vr, &[]).map(|_| ())
}

/// [`check_data_set`], and where the top-level elements of `wanted` lie (header and value, in
/// data set order; sequences and undefined lengths are not located): a reader of a few
/// attributes then parses those bytes and nothing else, whatever else the data set holds.
pub fn check_and_locate<R: Read + Seek>(
    mut source: R,
    offset: u64,
    explicit_vr: bool,
    wanted: &[dicom_core::Tag],
) -> Result<Vec<Range<u64>>, String> {
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
        wanted,
        found: Vec::new(),
    };
    let end = walker.end;
    walker.elements(Until::End, 0, end)?;
    // Nothing may follow the last element.
    if walker
        .reader
        .fill_buf()
        .map(|b| !b.is_empty())
        .unwrap_or(false)
    {
        return Err("bytes after the last element".into());
    }
    Ok(walker.found)
}

/// A file meta group longer than this is not a real one.
const MAX_META_GROUP: u64 = 64 * 1024;
/// Largest data set a deflated file may inflate to when checked: a whole enhanced multi-frame
/// series is a few hundred MiB at most.
const MAX_INFLATED_FILE: u64 = 1 << 30;

/// Why a deflated data set could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("the deflated data set inflates to more than {} MiB", .0 >> 20)]
    TooLarge(u64),
    #[error("malformed deflated data set")]
    Malformed(#[source] io::Error),
}

/// Inflate the data set that starts at `offset` into `sink`, refused once it passes `max_bytes`:
/// a small deflated stream can inflate a thousandfold, so the limit counts inflated bytes.
/// Returns the inflated size.
pub fn inflate_into<R: Read + Seek, W: io::Write>(
    source: &mut R,
    offset: u64,
    max_bytes: u64,
    sink: &mut W,
) -> Result<u64, InflateError> {
    source
        .seek(io::SeekFrom::Start(offset))
        .map_err(InflateError::Malformed)?;
    let mut inflated = flate2::read::DeflateDecoder::new(source).take(max_bytes + 1);
    let size = io::copy(&mut inflated, sink).map_err(InflateError::Malformed)?;
    if size > max_bytes {
        return Err(InflateError::TooLarge(max_bytes));
    }
    Ok(size)
}

/// Check a Part 10 file before a parser reads it: its file meta group (at most 64 KiB, every
/// element inside the file), then its data set as [`check_data_set`] does, inflated first when
/// deflated. The parsers allocate each declared length before reading it; after this check no
/// declared length exceeds what the file holds.
pub fn check_file(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let end = file.seek(io::SeekFrom::End(0)).map_err(|e| e.to_string())?;
    let mut head = [0u8; 132];
    file.seek(io::SeekFrom::Start(0))
        .map_err(|e| e.to_string())?;
    let got = file.read(&mut head).map_err(|e| e.to_string())?;
    let start = if got == 132 && &head[128..132] == b"DICM" {
        132
    } else if got >= 4 && &head[..4] == b"DICM" {
        4
    } else {
        return Err("not a DICOM file (no DICM prefix)".into());
    };
    file.seek(io::SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut walker = Walker {
        reader: BufReader::with_capacity(16 * 1024, file),
        position: start,
        end,
        explicit_vr: true,
        wanted: &[],
        found: Vec::new(),
    };
    let transfer_syntax = walker.meta_group()?;
    let data_offset = walker.position;
    let mut file = walker.reader.into_inner();
    match transfer_syntax.as_str() {
        IMPLICIT_VR_LE => check_data_set(file, data_offset, false),
        DEFLATED_EXPLICIT_VR_LE => {
            let mut inflated = Vec::new();
            inflate_into(&mut file, data_offset, MAX_INFLATED_FILE, &mut inflated)
                .map_err(|e| crate::logging::chain(&e))?;
            check_data_set(io::Cursor::new(&inflated), 0, true)
        }
        super::transfer_syntax::EXPLICIT_VR_BE => {
            Err("explicit VR big endian (retired) is not supported".into())
        }
        _ => check_data_set(file, data_offset, true),
    }
}

impl<R: Read + Seek> Walker<'_, R> {
    /// Walk the file meta group (explicit VR little endian, group 0002) and return its Transfer
    /// Syntax UID; the walker is left at the first element of the data set.
    fn meta_group(&mut self) -> Result<String, String> {
        let start = self.position;
        let mut transfer_syntax = None;
        loop {
            if self.remaining() < 4 {
                break;
            }
            let tag = self.read_tag()?;
            if tag.0 != 0x0002 {
                self.reader
                    .seek_relative(-4)
                    .map_err(|e| format!("cannot read the file: {e}"))?;
                self.position -= 4;
                break;
            }
            let (length, _) = self.read_header(tag)?;
            if self.position + u64::from(length) - start > MAX_META_GROUP {
                return Err(format!(
                    "a file meta group of more than {MAX_META_GROUP} bytes"
                ));
            }
            if tag == (0x0002, 0x0010) {
                let mut value = vec![0u8; length as usize];
                self.read_exact(&mut value, "the transfer syntax UID")?;
                transfer_syntax = Some(trim_padding(&String::from_utf8_lossy(&value)).to_string());
            } else {
                self.skip(tag, length)?;
            }
        }
        transfer_syntax.ok_or_else(|| "no Transfer Syntax UID in the file meta group".into())
    }
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

    /// Found by the corpus test: an unknown VR has a 4-byte length to the parser, which
    /// zero-filled the 1.5 GB that "FUZZ" spells; the walk reads the header the same way.
    #[test]
    fn an_unknown_vr_is_read_with_a_four_byte_length_as_the_parser_reads_it() {
        let mut ds = vec![0x08, 0x00, 0x20, 0x00, b'D', b'O', 0x06, 0x00];
        ds.extend(b"FUZZ-1");
        let error = check(&ds).unwrap_err();
        assert!(error.contains("declares 1515869510 bytes"), "{error}");
        let mut fits = vec![0x08, 0x00, 0x20, 0x00, b'D', b'O', 0, 0, 2, 0, 0, 0];
        fits.extend(b"AB");
        assert_eq!(check(&fits), Ok(()));
    }

    /// Found by the corpus test: an undefined-length item inside a defined-length sequence was
    /// walked to the end of the data set, not of its sequence (and a message underflowed).
    #[test]
    fn an_undefined_item_may_not_run_past_its_defined_sequence() {
        let leaf = explicit((0x0008, 0x1150), b"UI", b"1.2\0");
        let mut ds = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0];
        ds.extend_from_slice(&(8 + leaf.len() as u32).to_le_bytes());
        ds.extend([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
        ds.extend(&leaf);
        // Past the sequence's end: more elements, then the item's delimiter.
        ds.extend(&leaf);
        ds.extend([0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
        let error = check(&ds).unwrap_err();
        assert!(
            error.contains("(0008,1150) declares 4 bytes but only 0 remain"),
            "{error}"
        );
    }

    /// Found by libFuzzer: an AT value of 10 bytes is read as two tags, and the parser took the
    /// next header two bytes early, reading a length of 0xFF000006.
    #[test]
    fn a_binary_value_must_be_a_whole_number_of_values() {
        let at = explicit((0x0008, 0x0020), b"AT", b"0123456789");
        let error = check(&at).unwrap_err();
        assert!(
            error.contains("of VR AT has 10 bytes, not a multiple of 4"),
            "{error}"
        );
        assert_eq!(
            check(&explicit((0x0008, 0x0020), b"AT", b"01234567")),
            Ok(())
        );
        // Implicit VR: the dictionary's VR (Rows is US).
        let rows = [0x28, 0x00, 0x10, 0x00, 3, 0, 0, 0, 1, 2, 3];
        let error = check_data_set(Cursor::new(&rows), 0, false).unwrap_err();
        assert!(error.contains("of VR US has 3 bytes"), "{error}");
    }
}
