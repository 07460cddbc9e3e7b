package broker

// The adapters compiled into the broker. Each registers its kind
// (adapters.Register) from its package's init; adapter.kind picks one.
// Adding an adapter to the binary is one import here.
import (
	_ "github.com/ctibroker/ctibroker/adapters/remote"
	_ "github.com/ctibroker/ctibroker/adapters/sim"
)
