//! The raw system calls netlab needs, each behind a small safe function. nix's wrappers are
//! safe already, so this module holds no `unsafe` today; anything that needs it goes here,
//! with a `// SAFETY:` line.

pub mod netns;
pub mod nfnetlink;
