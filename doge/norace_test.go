//go:build !race

package doge_test

const raceEnabled = false
