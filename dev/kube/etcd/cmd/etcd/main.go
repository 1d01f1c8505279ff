// etcd server built from the published go.etcd.io/etcd/server/v3 module (Debian's 3.4 is too old).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
