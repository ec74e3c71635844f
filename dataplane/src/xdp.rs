//! The XDP classifier.
