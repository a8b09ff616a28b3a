// Package archtest holds tests of the shape of the sluice source tree: every package documented, and the dataplane kept free of the management UI.
package archtest
