"""The shops csvjobs writes to: push (add a batch's images to the live shop's products through its own API, once),
and the clients of each shop's API."""
