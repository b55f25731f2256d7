// Package defaults holds the defaults more than one package shares, so
// that each is defined once: the library's default is the one --help shows.
package defaults

// Jobs is how many transfers (registry requests, blob reads and writes)
// run in parallel when a command is not told otherwise (--jobs).
const Jobs = 4
