package main

import "os"

// childMain is the program proa runs in tests; exec_test.go's helper modes.
func childMain(args []string) {
	os.Exit(0)
}
