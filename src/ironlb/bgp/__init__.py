"""BGP and BFD: sans-IO codecs and state machines, plus asyncio sessions."""
