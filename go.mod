module github.com/sluicefw/sluice

go 1.26.8

require (
	github.com/gaissmai/bart v0.30.0
	github.com/goccy/go-yaml v1.19.2
)

require github.com/google/go-cmp v0.7.0
