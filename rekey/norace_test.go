//go:build !race

package rekey_test

// raceEnabled reports whether the tests were built with -race.
const raceEnabled = false
