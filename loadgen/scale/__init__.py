"""Scale out: shards of one campaign (per core, per pod) and the exact merge of their results."""
