//! See the table in `super`.
