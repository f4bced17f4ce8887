"""The shared support layer of the test suite: IHE SOAP messages (soap), keys and certificates (pki), a full
ITI-55 -> ITI-38 -> ITI-39 exchange against a running Xhuma (exchange), and local servers (servers)."""
