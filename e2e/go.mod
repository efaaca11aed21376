module proa/e2e

go 1.25
