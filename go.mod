module github.com/ferry-airgap/ferry

go 1.26.0
