"""Avatar methods; each module registers one LightningModule with zoo.registry."""
