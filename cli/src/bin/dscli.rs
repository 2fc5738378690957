//! `dscli`: DS CLI-compatible client of flashd. All logic lives in `flashtrack_cli::dscli`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(i32::from(flashtrack_cli::dscli::main()));
}
