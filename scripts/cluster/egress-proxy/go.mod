module smm.dev/localcluster/egressproxy

go 1.26.0
