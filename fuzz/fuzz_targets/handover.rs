//! Fuzz target: `echod::handover::decode`, the state a program reads when
//! it takes over from the one before it across an upgrade. Whatever the
//! bytes, it must refuse them or read them, never crash; and what it reads
//! must be exactly what `encode` would write for it (one form per state),
//! so nothing in a damaged form is quietly taken for something else.
//!
//! Input layout: the bytes are the form.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(handover) = echod::handover::decode(data) {
            assert_eq!(
                echod::handover::encode(&handover),
                data,
                "a form read back differs from the one written for it"
            );
        }
    });
}
