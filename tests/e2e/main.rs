//! End-to-end tests against real peers. One test binary (linking is the slow part); modules
//! per area. Every test makes its own OU, so all tests share one Samba and one slapd; mail tests
//! tag their addresses, so they share one SMTP server (or start a private one to stop it).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod ad;
mod assess;
mod cloud;
mod crash;
mod faults;
mod html_report;
mod ldif;
mod mail;
mod openldap;
mod serve;
mod sync;
