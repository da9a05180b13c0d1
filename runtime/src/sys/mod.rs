//! Every raw syscall the runtime makes, each behind one small safe function.
#![allow(unsafe_code)]
