//go:build !unix

package main

func reexecWithSmallStacks() {}
