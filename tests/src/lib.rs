//! Builders that start HRS hierarchies on loopback for the end-to-end tests.
