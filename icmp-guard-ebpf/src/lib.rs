#![no_std]
// The XDP program is the binary target; this empty library lets icmp-guard declare a
// build-dependency on the crate so cargo rebuilds the object when it changes.
