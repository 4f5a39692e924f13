#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msnode::fuzzing::command_set(data));
