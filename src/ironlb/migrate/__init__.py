"""`ironlb migrate`: moving a cluster's configuration and Services from MetalLB to ironlb."""
