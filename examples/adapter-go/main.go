// A CTI adapter process in Go: the adapters.Adapter of your switch, served
// over the adapter protocol by the SDK. Here the switch is the simulator;
// replace sim.New with yours.
//
//	go run ./examples/adapter-go --listen 127.0.0.1:7070
//	ctibroker adapter check --addr 127.0.0.1:7070
package main

import (
	"flag"
	"log"
	"net"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters/remote/sdk"
	"github.com/ctibroker/ctibroker/adapters/sim"
	"github.com/ctibroker/ctibroker/protocol"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7070", "address of the adapter protocol")
	flag.Parse()
	sw, err := sim.New(sim.Config{NotReadyReasons: []protocol.ReasonCode{{ID: "1", Code: "break", Selectable: true}}})
	if err != nil {
		log.Fatal(err)
	}
	defer sw.Close()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Println("adapter listening on", lis.Addr())
	log.Fatal(sdk.New(sw, zap.NewExample()).Serve(lis))
}
