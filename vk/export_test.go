package vk

// TrimCHeap exports trimCHeap to the package's external tests (leak_test.go).
var TrimCHeap = trimCHeap
