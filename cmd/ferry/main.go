// Command ferry carries container images across an air gap.
package main

func main() {}
