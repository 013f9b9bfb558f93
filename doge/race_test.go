//go:build race

package doge_test

const raceEnabled = true
