//! End-to-end tests of HRS live in `tests/`: whole hierarchies started on loopback by the
//! builder in `tests/support`.
