#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msnode::fuzzing::series_volume(data));
