// Command etcd is the etcd server built from the published go.etcd.io/etcd/server/v3 module.
// Upstream's own go.mod replaces its sibling modules with relative paths, which `go install`
// cannot follow; this wrapper module depends on the published versions instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
