#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causeway_fuzz::super_packet::super_packet(data));
