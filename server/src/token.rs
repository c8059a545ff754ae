//! API tokens: 256 random bits from the operating system, shown once, stored as a hash.

/// A new API token: `sft_` and 64 hex digits.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sft_{hex}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_and_never_repeat() {
        let (a, b) = (super::new_token().unwrap(), super::new_token().unwrap());
        assert_eq!(a.len(), 68);
        assert!(a.starts_with("sft_"));
        assert_ne!(a, b);
    }
}
