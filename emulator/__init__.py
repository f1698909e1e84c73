"""The local Azure stand-in: ARM (Microsoft.ContainerRegistry), Key Vault, managed identity, registry data
planes over TLS, and Azurite for Blob storage behind a fault-injecting proxy.

It is a separate program (``python -m emulator up`` or ``acr-transfer emulator up``); the product talks to
it only over the network, exactly as to Azure, and never imports it.
"""
